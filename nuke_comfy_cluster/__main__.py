"""``python -m nuke_comfy_cluster ...``: see :mod:`nuke_comfy_cluster.cli`."""

import sys

from .cli import main

sys.exit(main())
