"""vocab_adapters: apply a vocabcore plan to tokenizers, models, configs and optimizers."""
