"""elemta_smtp.smtp"""
