"""What a model is sent: the prompt a conversation makes (prompt), exact token counts (tokens, image_tokens),
fitting it into the model's window (trimming, window), which model answers (model_choice) and which messages
ask for a picture (image_prompts)."""
