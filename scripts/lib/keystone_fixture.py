"""The test Keystone's projects and users, and fixture.json describing them.

Run by scripts/keystone with the Keystone venv's Python (keystoneauth1 and keystoneclient come
with keystone). Idempotent: existing projects, users and assignments are kept.
"""
import json
import os
import sys

from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client

PASSWORD = "magnum-test-password"
PEOPLE = [
    # user, project, role (Keystone's bootstrap makes admin imply member imply reader)
    ("alpha-member", "magnum-alpha", "member"),
    ("alpha-reader", "magnum-alpha", "reader"),
    ("beta-member", "magnum-beta", "member"),
]


def main(fixture_path, magnum_url, credentials_file):
    auth_url = os.environ["OS_AUTH_URL"]
    admin = client.Client(session=session.Session(auth=v3.Password(
        auth_url=auth_url, username="admin", password=os.environ["OS_PASSWORD"],
        project_name="admin", user_domain_id="default", project_domain_id="default")))

    def project(name):
        found = admin.projects.list(name=name, domain="default")
        return found[0] if found else admin.projects.create(name, "default")

    def user(name):
        found = admin.users.list(name=name, domain="default")
        if found:
            admin.users.update(found[0], password=PASSWORD)
            return found[0]
        return admin.users.create(name, domain="default", password=PASSWORD)

    roles = {role.name: role for role in admin.roles.list()}
    users = {}
    for user_name, project_name, role_name in PEOPLE:
        the_project, the_user = project(project_name), user(user_name)
        admin.roles.grant(roles[role_name], user=the_user, project=the_project)
        users[user_name] = {"user_id": the_user.id, "project": project_name,
                            "project_id": the_project.id, "password": PASSWORD}
    admin_project = project("admin")
    fixture = {
        "auth_url": auth_url,
        "www_authenticate_uri": auth_url.rsplit("/v3", 1)[0],
        "magnum_url": magnum_url,
        "credentials_file": credentials_file,
        "admin": {"user": "admin", "password": os.environ["OS_PASSWORD"], "project": "admin",
                  "project_id": admin_project.id},
        "users": users,
    }
    with open(fixture_path + ".tmp", "w") as out:
        json.dump(fixture, out, indent=2)
    os.replace(fixture_path + ".tmp", fixture_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
