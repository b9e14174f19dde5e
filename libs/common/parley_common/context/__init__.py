"""What a model is sent. `assembly.assemble_context` is the one entry point (the orchestrator's
turns and fallbacks, the gateway's token counts and admission estimates), with `PromptSettings`;
under it: the prompt a conversation makes (prompt), exact token counts (tokens, image_tokens),
fitting it into the model's window and what is dropped (trimming, window), which model answers
(model_choice); and which messages ask for a picture (image_prompts)."""
