"""qhil.host"""
