"""The reversible stages: one module per target, each with the same two-phase apply/revert.

``reversible`` holds the protocol every stage implements; ``fast_tokenizer``,
``slow_tokenizer``, ``embeddings``, ``config``, ``optimizer`` and ``softmax`` are the stages;
``tokenizer_adapter`` picks the tokenizer stage for a tokenizer object; ``added_rows`` and
``wrappers`` are what the stages share (rows of added tokens, model wrappers they see through).
The stages do not import one another: what one needs from another reaches it as plain data
through :mod:`vocab_adapters.session`.
"""
