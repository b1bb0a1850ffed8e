"""Generative identifiers (GRACE): a language model that memorises a collection and decodes the ids
of its images, constrained to ids that exist."""
