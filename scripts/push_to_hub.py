#!/usr/bin/env python
"""Push a trained pipeline to the Hugging Face Hub, loadable with and without the mnist_diffusion package.

    python scripts/push_to_hub.py --model_dir mnist-ddpm --repo_id org/mnist-ddpm [--private] [--revision BRANCH]
        [--source_url https://github.com/org/mnist-diffusion]

The token comes from --token, HF_TOKEN or `hf auth login`. The card installs the package from --source_url (default:
setup.py's url). A folder with a token-shaped string in a file to push is refused. What is pushed, and why:
`mnist_diffusion/lab/hub.py`.
"""

from mnist_diffusion.lab.hub import main

if __name__ == "__main__":
    main()
