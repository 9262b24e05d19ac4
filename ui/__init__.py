"""normlab.ui"""
