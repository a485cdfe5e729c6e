"""tuneforge: fine-tune and serve LLMs behind the SageMaker container contract."""

__version__ = "0.1.0"
