"""normlab.classify"""
