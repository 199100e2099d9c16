from configparser import ConfigParser
import setuptools, shlex

# note: all settings are in settings.ini; edit there, not here
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o:cfg[o] for o in cfg_keys}

# SPDX license expressions (PEP 639): settings.ini's nbdev license name -> the expression
licenses = {'apache2': 'Apache-2.0', 'mit': 'MIT', 'gpl2': 'GPL-2.0-only', 'gpl3': 'GPL-3.0-only', 'bsd3': 'BSD-3-Clause'}
# settings.ini's status is the number of the Development Status classifier (3 -> '3 - Alpha')
statuses = {1: 'Planning', 2: 'Pre-Alpha', 3: 'Alpha', 4: 'Beta', 5: 'Production/Stable', 6: 'Mature', 7: 'Inactive'}
# The Python versions CI tests (tools/ci/, .ci/run); python_requires is '>=' + min_python
py_versions = '3.11 3.12'.split()

requirements = shlex.split(cfg.get('requirements', ''))
if cfg.get('pip_requirements'): requirements += shlex.split(cfg.get('pip_requirements', ''))
min_python = cfg['min_python']
license_expression = licenses.get(cfg['license'].lower(), cfg['license'])
status = int(cfg['status'])
# Optional backends: each `<extra>_requirements` line in settings.ini becomes `pip install cjm-workflow-state[<extra>]`
extras = {name[:-len('_requirements')]: shlex.split(value) for name, value in cfg.items()
          if name.endswith('_requirements') and name not in ('pip_requirements', 'conda_requirements') and value.strip()}

setuptools.setup(
    name = cfg['lib_name'],
    license_expression = license_expression,
    license_files = ['LICENSE'],
    classifiers = [
        f'Development Status :: {status} - {statuses[status]}',
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
        'Typing :: Typed',
    ] + ['Programming Language :: Python :: '+o for o in py_versions[py_versions.index(min_python):]],
    url = cfg['git_url'],
    # the package and its data folders (static/, backends/redis_lua/), which have no __init__.py
    packages = setuptools.find_namespace_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*'], exclude=['*.__pycache__']),
    include_package_data = True,
    package_data = {cfg['lib_path']: ['py.typed']},  # PEP 561: the package has inline type hints
    install_requires = requirements,
    extras_require = extras,
    dependency_links = cfg.get('dep_links','').split(),
    python_requires  = '>=' + cfg['min_python'],
    long_description = open('README.md', encoding='utf-8').read(),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': cfg.get('console_scripts','').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']
    },
    **setup_cfg)
