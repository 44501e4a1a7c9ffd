"""The Gradio app: one module per tab (`tab_*.py`), shared panels (`jobs_panel`, `render`, `forms`,
`images_view`, `figures`), the deployment policy and the app itself (`app`). Callbacks stay thin: plain
functions over the services, wrapped for Gradio in each tab's `build`."""
