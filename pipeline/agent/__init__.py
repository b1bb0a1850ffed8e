"""The loops above the stages: a feedback session (:mod:`.session`) and a dialogue
(:mod:`.dialogue`). Nothing here is needed by a stage."""
