"""Evaluation: retrieval metrics and reports (:mod:`.retrieval`), the scene query sets
(:mod:`.scenes`), model cards (:mod:`.model_card`)."""
