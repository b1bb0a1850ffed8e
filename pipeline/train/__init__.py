"""Training, one module per trained model: :mod:`.clip` (the zoo CLIP), with its data (:mod:`.data`),
loss (:mod:`.losses`) and wording noise (:mod:`.fillers`)."""
