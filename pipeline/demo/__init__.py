"""``viewfinder demo``: the bundled defaults end to end (:mod:`.run`), and its contact sheet
(:mod:`.contact_sheet`)."""
