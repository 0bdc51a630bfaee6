"""
The lab: what trains, evaluates and reports on the library (`mnist_diffusion`'s models, scheduler, pipelines,
likelihood, images and data reader) and pushes it to the Hub. It imports the library; the library never imports it
(`.importlinter`, docs/architecture.md).
"""
