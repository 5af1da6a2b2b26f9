"""Tokenizer knowledge shared by the stages and the planning code.

``tokenizer_backend`` (parsed ``tokenizer.json``, fingerprints), ``bpe_closure`` (BPE merge
closures), ``added_tokens`` (``tokenizer.json`` surgery for added tokens) and ``sp_added``
(added tokens in sentencepiece protos). Nothing here changes a tokenizer object.
"""
