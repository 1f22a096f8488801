"""modelyard: measure, simulate, plan, deploy and route a fleet of co-located LLMs."""

__version__ = "0.1.0"
