"""Streamlit apps."""
