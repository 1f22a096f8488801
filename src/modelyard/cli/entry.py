"""The entry point: every command registered, modelyard errors turned into one line each."""

from __future__ import annotations

from modelyard.cli.common import app, fail
from modelyard.errors import ConfigError, ModelyardError, UnknownNameError
from modelyard.signals import Stopped


def main() -> None:
    """Entry point: turns modelyard errors into one line each and exit code 1."""
    try:
        app()
    except ConfigError as exc:
        fail("\n".join(exc.problems))
    except UnknownNameError as exc:
        fail(str(exc))
    except ModelyardError as exc:
        fail(str(exc))
    except Stopped as exc:
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
