"""Stage 7: files in and out: weights, Hugging Face folders, model specs."""
