"""The T5 student (t5.py, layers.py, t5_config.py) and its Hugging Face checkpoint mapping (hf.py)."""
