"""Language-model plumbing the stages use: prompts as data (:mod:`.prompts`), asking a chat model
and falling back when it fails (:mod:`.ask`), and checking and applying what it answers
(:mod:`.parse`). Below ``stages/``; it knows nothing of the loops above them."""
