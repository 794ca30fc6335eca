from tinyllm_jax.main import run

run()
