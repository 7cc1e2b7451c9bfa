"""``python -m explainer``: the same command line as ``gradcam-chat`` (see :mod:`explainer.cli`)."""

import sys

from explainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
