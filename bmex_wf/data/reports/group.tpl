<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<meta name="generator" content="bmex-wf" />
<title>{{ title }}</title>
<style>
{% include "report.css" %}
</style>
</head>
<body class="group-report">
<main>
<h1 class="sub-report-title">{{ title }}</h1>
<p>{{ n_images }} image{{ "s" if n_images != 1 }} processed{% if n_failed %}, <span class="text-danger">{{ n_failed }} not successful</span>{% endif %}.
The table is also written as <a href="group_qc.tsv">group_qc.tsv</a>.</p>
<section id="qi-distribution">
<h2>Quality index per age group</h2>
<p class="elem-desc">QI = TCT(original) / TCT(enhanced), the grey/white-matter tissue contrast
before over after enhancement; values below 1 (dashed line) mean the enhanced image has more
tissue contrast.</p>
<div class="reportlet group-figure">
{{ qi_svg | safe }}
</div>
</section>
<section id="images">
<h2>Images</h2>
<table class="table bmex-group">
<thead><tr>{% for col in columns %}<th>{{ col }}</th>{% endfor %}<th>report</th></tr></thead>
<tbody>
{% for row in rows %}
<tr{% if row.failed %} class="text-danger"{% endif %}>
{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}
<td>{% if row.link %}<a class="subject-report" href="{{ row.link }}">{{ row.link }}</a>{% else %}n/a{% endif %}</td>
</tr>
{% if row.error %}<tr class="text-danger"><td colspan="{{ columns | length + 1 }}">{{ row.error }}</td></tr>{% endif %}
{% endfor %}
</tbody>
</table>
</section>
</main>
</body>
</html>
