"""The language-model side of the pipeline: prompts as data, and checking what a model answers."""
