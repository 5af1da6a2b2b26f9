"""vocabcore inside other libraries' training loops and formats.

``trainer`` (the Hugging Face ``Trainer`` callback), ``flair_plugin`` (Flair's
``ModelTrainer``), ``sentence_transformer`` (sentence-transformers models) and ``distributed``
(DDP, FSDP, DeepSpeed, accelerate).
"""
