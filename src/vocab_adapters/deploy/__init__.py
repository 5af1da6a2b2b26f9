"""Trimmed models where they run: files for inference engines, written from a plan.

``gguf`` writes a trimmed decoder (Llama, Qwen2/3, Gemma 3) as one GGUF file for llama.cpp,
``onnx`` exports a trimmed encoder or decoder for ONNX Runtime, and ``draft_vocab`` writes a
plan's kept ids as the token maps that speculative decoding reads (SGLang's
``--speculative-token-map``, EAGLE-3's ``d2t``/``t2d``). ``export.export_reduced`` calls the
first two (``format="gguf"`` / ``"onnx"``); the ``vocabcore draft`` command the last.
"""
