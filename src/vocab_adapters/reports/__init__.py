"""What a plan does, measured before or after applying it.

``coverage_report`` (how held-out texts encode after trimming, the coverage curve) and
``memory`` (``memory_estimate``: bytes of parameters, gradients, optimizer state, logits).
"""
