"""Building plans from data: ``plan_from_texts`` and what it is made of.

``texts`` (the one input pipeline: texts, pairs, word lists, conversations, datasets),
``piece_counts`` (counting each distinct piece once), ``chat`` (conversations through chat
templates), ``budget`` (``max_size``), ``suggest`` (tokens worth adding) and ``text_files``
(reading .txt/.jsonl/.csv/.parquet).
"""
