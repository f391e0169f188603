r"""Copies (or clones) the project onto every worker of a slice and installs it for TPU.

    python launch/tpu/install.py --name=gecko --zone=us-west4-a [--source=.] [--dry-run]
    python launch/tpu/install.py --name=gecko --repo=https://HOST/gecko_jax.git --ref=main

Without --repo, the local checkout (less .git, .venv and runs) is packed and
copied to each worker's ~/gecko_jax.
"""

from gecko_jax.launch_tools import tpu


def _arguments(parser):
    parser.add_argument("--source", default=".", help="Local checkout to copy.")
    parser.add_argument("--repo", default="", help="Git URL to clone on each worker instead.")
    parser.add_argument("--ref", default="main", help="Branch, tag or commit of --repo.")


if __name__ == "__main__":
    tpu.main(
        __doc__,
        _arguments,
        lambda tpu_slice, args: tpu.install_commands(tpu_slice, args.source, args.repo, args.ref),
    )
