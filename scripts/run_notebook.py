#!/usr/bin/env python
"""Execute a notebook and write it back with its outputs, each code cell stamped with the sha256 of its source.

    python scripts/run_notebook.py docs/tutorial.ipynb                 # the full run, whose outputs are committed
    python scripts/run_notebook.py docs/tutorial.ipynb --quick --output /tmp/quick.ipynb   # CI's quick mode
    python scripts/run_notebook.py docs/tutorial.ipynb --check         # do the outputs come from the code?
"""

from mnist_diffusion.lab.notebook import main

if __name__ == "__main__":
    main()
