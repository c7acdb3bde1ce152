"""embedkit's built-in backbone plugins, installed as `embedkit.plugins`.

Each module registers one family through the `embedkit.backbones` entry-point group in
setup.cfg, exactly as a third-party package would; the core never imports them directly.
"""
