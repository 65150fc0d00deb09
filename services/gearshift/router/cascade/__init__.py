"""The cascade: the answer-aware check of a small model's answer at run time (setting `cascade`)."""
