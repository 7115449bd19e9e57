"""Models made elsewhere, brought into bundles: llama.cpp's GGUF pairs (an LM GGUF and an mmproj GGUF,
as LM Studio and Ollama distribute them) and models in a local Ollama store.

`gguf_file` reads GGUF files with gguf-py, `lm` the facts of a language-model GGUF, `mmproj` rebuilds
an mmproj's vision tower and projector in torch, `gguf_pair` writes the bundle, `ollama` finds a
model's files in Ollama's store. Hugging Face LLaVA folders need no importer: `edgelmm export` reads them.
"""
