"""Stage 5: apply a plan to real weights, with compensation and Hugging Face configs."""
