"""The language-model recipe: SFT (recipe.py) and the preference methods (preference*.py) on the
Hugging Face Trainer, with what only they need (plan, trainer, packing, loss, batching, preflight ...)."""
