"""The baseline of ``bench.streams``: the plainest Streamlit chat page on LangChain.

``st.write_stream`` over ``ChatOpenAI(streaming=True).stream(...)``, history in
``st.session_state``. The model's server comes from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
"""

import os

import streamlit as st
from langchain_openai import ChatOpenAI


@st.cache_resource
def chat_model() -> ChatOpenAI:
    return ChatOpenAI(model=os.environ.get("CHAT_MODEL", "bench"), streaming=True,
                      max_retries=0, timeout=300)


messages = st.session_state.setdefault("messages", [])
for message in messages:
    with st.chat_message(message["role"]):
        st.markdown(message["content"])
if prompt := st.chat_input("Message"):
    messages.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    with st.chat_message("assistant"):
        reply = st.write_stream(chunk.text for chunk in chat_model().stream(messages))
    messages.append({"role": "assistant", "content": reply})
