"""PoolChat's Streamlit entry point: a frame that declares the pages."""

import streamlit as st

st.set_page_config(page_title="PoolChat", page_icon=":material/forum:", layout="wide")

navigation = st.navigation([
    st.Page("pages/chat.py", title="Chat", icon=":material/chat:", url_path="chat", default=True),
    st.Page("pages/stats.py", title="Stats", icon=":material/monitoring:", url_path="stats"),
])
navigation.run()
