"""normlab.stylize"""
