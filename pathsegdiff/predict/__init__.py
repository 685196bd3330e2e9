"""Apply a trained head to a whole image or slide (the top of the stack: uses extract, store and train_head)."""
