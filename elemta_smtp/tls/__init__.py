"""elemta_smtp.tls"""
