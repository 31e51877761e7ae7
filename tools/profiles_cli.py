"""``floorgate profiles validate [PATH …]``: check device profiles and print every problem.

The top-level ``floorgate`` command calls ``register(subparsers)``. Output, one line per file or problem::

    ok firmware-config/profiles/eastron-sdm630.yaml
    my-meter.yaml: points[3].data_type: 'flot32' is not one of ['int8', …] (did you mean 'float32'?)

Exit status 0 when every profile is valid, 1 otherwise.
"""

from __future__ import annotations

import argparse

from edge.devices.profiles import DEFAULT_PROFILES_DIR, profile_problems

_DESCRIPTION = (
    "Validate device profiles (one YAML file per device model) against profile.schema.json and the rules the "
    "schema cannot express (unique point names, defined poll groups, bit / length / mask fitting the data type, "
    "addresses not below the address base and within 65535, reads within max_registers). Prints 'ok FILE' for a "
    "valid profile and one 'FILE: key.path: what was expected' line per problem; exits 0 when all are valid, "
    "1 otherwise."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profiles = subparsers.add_parser(
        "profiles", help="device profiles (firmware-config/profiles)", description="Work with device profiles."
    )
    sub = profiles.add_subparsers(dest="profiles_command", required=True, metavar="COMMAND")
    validate = sub.add_parser("validate", help="check profiles and print every problem", description=_DESCRIPTION)
    validate.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help=f"profile files or directories of *.yaml profiles (default: every profile in {DEFAULT_PROFILES_DIR})",
    )
    validate.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Print ``ok FILE`` or the problems of each file; 0 when every profile is valid."""
    results = profile_problems(args.paths)
    for path, problems in results.items():
        if problems:
            for line in problems:
                print(line)
        else:
            print(f"ok {path}")
    return 1 if any(results.values()) else 0


__all__ = ["register", "run_validate"]
