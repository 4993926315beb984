"""scan -> decode -> backbone -> embeddings -> store. The only package that imports torch.

Importing this package is cheap: torch and birder load only with the modules that need them
(`indexer.pipeline`, `indexer.backbones`), so `imgsearch query --id` never pays for them.
"""
