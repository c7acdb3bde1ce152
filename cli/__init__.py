"""embedkit's click app, installed as `embedkit.cli`; all logic lives in the embedkit core."""
