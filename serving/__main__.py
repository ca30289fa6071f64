"""``python -m serving``: run the model server."""

import argparse
import sys

from serving.cli import add_serve_arguments, run_serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve SavedModels over TF Serving's REST API and KServe V2's, and over "
                    "their gRPC services (--grpc-port, or --port with --rest_api_port).",
    )
    add_serve_arguments(parser)
    try:
        return run_serve(parser.parse_args(argv))
    except ValueError as err:  # a bad access setting, e.g. a token file that is not there
        sys.exit(f"python -m serving: {err}")


if __name__ == "__main__":
    sys.exit(main())
