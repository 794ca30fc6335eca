from absl import app

from tinyllm_jax.main import main

app.run(main)
