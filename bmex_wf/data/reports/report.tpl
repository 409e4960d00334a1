<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<meta name="generator" content="bmex-wf (report layout by NiReports)" />
<title>{{ title }}</title>
<style>
{% include "report.css" %}
</style>
{% for hh in header %}
{{ hh }}
{% endfor %}
</head>
<body>
<nav class="navbar">
<ul class="navbar-nav">
{% for sub_report in sections %}
  {% if sub_report.isnested %}
  <li class="nav-item dropdown">
    <a class="nav-link dropdown-toggle" id="navbar{{ sub_report.name }}" role="button" data-bs-toggle="dropdown" aria-expanded="false" href="#{{ sub_report.name }}">{{ sub_report.name }}</a>
    <ul class="dropdown-menu">
    {% for run_report in sub_report.reportlets %}
      {% if run_report.title %}
      <li><a class="dropdown-item" href="#{{ run_report.name }}">{{ run_report.title }}</a></li>
      {% endif %}
    {% endfor %}
    </ul>
  </li>
  {% else %}
  <li class="nav-item"><a class="nav-link" href="#{{ sub_report.name }}">{{ sub_report.name }}</a></li>
  {% endif %}
{% endfor %}
</ul>
{% for item in navbar %}
{{ item }}
{% endfor %}
</nav>
<main>
{% for sub_report in sections %}
  {% if sub_report.reportlets %}
  <section id="{{ sub_report.name }}" class="sub-report">
  <h1 class="sub-report-title">{{ sub_report.name }}</h1>
  {% for run_report in sub_report.reportlets %}
    <div id="{{ run_report.name }}" class="run-report">
      {% if run_report.title %}<h2 class="sub-report-group">{{ run_report.title }}</h2>{% endif %}
      {% if run_report.subtitle %}<h3 class="run-title">{{ run_report.subtitle }}</h3>{% endif %}
      {% if run_report.description %}<p class="elem-desc">{{ run_report.description }}</p>{% endif %}
      {% for elem in run_report.components %}
        {% if elem[0] %}
          {% if elem[1] %}<p class="elem-caption">{{ elem[1] }}</p>{% endif %}
          {{ elem[0] }}
        {% endif %}
      {% endfor %}
    </div>
  {% endfor %}
  </section>
  {% endif %}
{% endfor %}
</main>
{% for ff in footer %}
{{ ff }}
{% endfor %}
<script>
{% include "report.js" %}
</script>
</body>
</html>
