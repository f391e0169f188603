r"""Deletes a Cloud TPU VM slice (checkpoints in gs:// stay).

python launch/tpu/delete.py --name=gecko --zone=us-west4-a [--dry-run]
"""

from gecko_jax.launch_tools import tpu

if __name__ == "__main__":
    tpu.main(__doc__, lambda parser: None, lambda tpu_slice, args: tpu.delete_commands(tpu_slice))
