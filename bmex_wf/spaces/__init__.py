"""Output spaces: TemplateFlow templates and ANTs registration to them."""
