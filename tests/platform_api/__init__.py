"""Tests of the LangGraph Platform API (api/platform/) with the official langgraph-sdk."""
