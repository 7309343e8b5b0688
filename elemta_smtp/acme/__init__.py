"""elemta_smtp.acme"""
